"""Authentication and authorization: who signed a request (SigV4, access keys, role sessions)
and whether IAM-style policies let them do it. Used by `api/`; uses `store/` and `models`."""
