"""API keys of their own (several per client, named, expiring, revocable); Standard Webhooks secrets.

Every client's token becomes its key named "token" (same SHA-256, same prefix): existing tokens
keep working. A hex webhook secret becomes `whsec_` + base64 of the same bytes: the HMAC key is
unchanged, only written as Standard Webhooks libraries expect it.
"""

import base64

import django.db.models.deletion
from django.db import migrations, models

import tickets.models


def forwards(apps, schema_editor):
    Client = apps.get_model("tickets", "Client")
    ApiKey = apps.get_model("tickets", "ApiKey")
    for client in Client.objects.all():
        ApiKey.objects.create(client=client, name="token", prefix=client.token_prefix, key_hash=client.token_hash)
        if not client.webhook_secret.startswith("whsec_"):
            client.webhook_secret = "whsec_" + base64.b64encode(client.webhook_secret.encode()).decode()
            client.save(update_fields=["webhook_secret"])


def backwards(apps, schema_editor):
    Client = apps.get_model("tickets", "Client")
    for client in Client.objects.all():
        key = client.api_keys.order_by("created_at").first()
        if key is not None:
            client.token_hash, client.token_prefix = key.key_hash, key.prefix[:12]
        if client.webhook_secret.startswith("whsec_"):
            client.webhook_secret = base64.b64decode(client.webhook_secret[6:]).decode("latin-1")[:64]
        client.save(update_fields=["token_hash", "token_prefix", "webhook_secret"])


class Migration(migrations.Migration):
    dependencies = [
        ("tickets", "0002_callback_due"),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                (
                    "prefix",
                    models.CharField(help_text="The key's first characters, to recognise it.", max_length=16),
                ),
                ("key_hash", models.CharField(editable=False, max_length=64, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "expires_at",
                    models.DateTimeField(blank=True, help_text="Refused from this time on.", null=True),
                ),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
                ("last_used_at", models.DateTimeField(blank=True, help_text="To the minute.", null=True)),
                (
                    "client",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="api_keys", to="tickets.client"
                    ),
                ),
            ],
            options={"verbose_name": "API key"},
        ),
        migrations.AlterField(
            model_name="client",
            name="webhook_secret",
            field=models.CharField(default=tickets.models.webhook_secret_new, max_length=128),
        ),
        migrations.AddField(
            model_name="client",
            name="webhook_secret_previous",
            field=models.CharField(blank=True, default="", max_length=128),
        ),
        migrations.AddField(
            model_name="client",
            name="webhook_secret_previous_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(forwards, backwards),
        migrations.AlterField(
            model_name="client",
            name="webhook_secret",
            field=models.CharField(default=tickets.models.webhook_secret_new, max_length=128, unique=True),
        ),
        migrations.RemoveField(model_name="client", name="token_hash"),
        migrations.RemoveField(model_name="client", name="token_prefix"),
    ]
