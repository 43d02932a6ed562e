"""Every read and write of a store: DynamoDB tables, lake partitions, Kafka topics."""
