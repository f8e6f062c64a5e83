"""Fleet health: when each device last reported, and an alert when one goes quiet for too
long and again when it is back."""
