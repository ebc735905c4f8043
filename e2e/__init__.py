"""Browser journeys against the real processes (granian web + SAQ worker) and a real SMTP server."""
