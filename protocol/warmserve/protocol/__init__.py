"""The contracts between WarmServe's components: the worker state documents, the gateway's demand report,
the OpenAI request shapes, and the error types every component raises (docs/architecture.md)."""
