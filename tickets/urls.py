from __future__ import annotations

from django.urls import path

from tickets.api.views import TicketCallbackApi, TicketDetailApi, TicketListCreateApi, TicketReplayApi

urlpatterns = [
    path("tickets/", TicketListCreateApi.as_view(), name="ticket-list"),
    path("tickets/<str:ticket_id>/", TicketDetailApi.as_view(), name="ticket-detail"),
    path("tickets/<str:ticket_id>/replay/", TicketReplayApi.as_view(), name="ticket-replay"),
    path("tickets/<str:ticket_id>/callback/", TicketCallbackApi.as_view(), name="ticket-callback"),
]
