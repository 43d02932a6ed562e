"""The pipeline stages, upstream to downstream: ingest, quality, features, embeddings, scoring,
planning, dispatch (with channels and templates) and the stream that closes the loop."""
