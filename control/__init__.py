"""What people and other systems use: the Temporal client facade and the `rsm` CLI (later the HTTP
API and the Resources page). Reads come from the database, commands go through the workflows."""
