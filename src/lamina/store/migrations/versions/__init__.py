"""The revisions of the schema, oldest first (see `lamina.store.migrations`)."""
