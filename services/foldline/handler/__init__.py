"""The command handler: partition tasks that decide commands, and the exactly-once engine around them."""
