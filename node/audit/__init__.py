"""The audit trail: one durable record per part, its image, and operator reviews."""
