"""Event-source mappings at run time: pollers that read the brokers users run and invoke
functions with Lambda's delivery semantics. `api.py` is the contract every broker module
implements."""
