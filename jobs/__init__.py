"""The job contract shared by the API (``app/``) and the workers (``worker/``): settings, the job
record and its states, the Redis job store, queue routing, source checks. No torch, no FastAPI."""
