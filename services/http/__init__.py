"""The HTTP front door: a client of the gateway over gRPC (never of the database or the queue) that serves the
job API as JSON, OpenAI's Images and Chat Completions, and the dashboard."""
