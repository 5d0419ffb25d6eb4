from __future__ import annotations

from django.urls import path

from tickets.api import TicketDetailApi, TicketListCreateApi, TicketReplayApi

urlpatterns = [
    path("tickets/", TicketListCreateApi.as_view(), name="ticket-list"),
    path("tickets/<str:ticket_id>/", TicketDetailApi.as_view(), name="ticket-detail"),
    path("tickets/<str:ticket_id>/replay/", TicketReplayApi.as_view(), name="ticket-replay"),
]
