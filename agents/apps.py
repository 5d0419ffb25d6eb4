from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from agents import metrics

        metrics.connect()  # stage_finished → metrics and the one log line per stage attempt
