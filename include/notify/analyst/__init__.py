"""What analysts read: explanations of a user's plan and deliveries, and table exports."""
