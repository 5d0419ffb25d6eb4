"""The API views and what only they use: serializers, errors, the schema, backpressure. The top of
the house: the views may call any app; no app imports this package."""
