"""gunicorn reads this file from the working directory for every `gunicorn` command (the Procfile,
the image, compose, the chart); the command lines keep the rest.

keepalive: gunicorn's default closes an idle connection after 2 s. A client (or a load balancer,
whose idle timeout is typically 60 s) that sends on a connection just as gunicorn closes it gets a
reset, not an answer — the fault suite saw one with a client retrying every 2 s during an outage.
Idle connections wait in the worker's poller, not on a thread.
"""

keepalive = 75
