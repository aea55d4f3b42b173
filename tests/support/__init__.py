"""What several test folders share, imported as `tests.support.<module>`: runs made
through db.jobs (runs), fresh PostgreSQL databases (pg_databases), a Redis server and
worker processes of a test's own (queue_stack), a local Hugging Face Hub (fake_hub),
a model that predicts given masks (mask_oracle) and a claiming process (claimer)."""
