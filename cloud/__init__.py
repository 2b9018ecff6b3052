"""Cloud service: Sparkplug host application, ingest, storage, query API, live push, dashboard."""
