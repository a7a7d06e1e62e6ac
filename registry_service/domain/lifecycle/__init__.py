"""Taking things back: yanking and purging versions, deleting adapters and base models. The rows go
in one transaction with their audit event; the bytes they referenced are then removed under each
blob's lock where no other row references them (what is left, the blob collection removes)."""
