"""The HTTP front: validates jobs, stores their records, queues them; reads status from the JobStore only."""
