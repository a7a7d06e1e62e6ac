"""Webhooks: a namespace admin registers URLs that receive the namespace's audit events as signed
JSON POSTs (:mod:`.signing`), sent by the workers with retries (:mod:`.deliver`) and logged per
delivery; targets must be public addresses unless the operator allows private ones (:mod:`.targets`)."""
