"""Compositions: named, versioned combinations of adapter versions (stacked with weights, or routed with Arrow)."""
