"""One module per dataset: its official layout, the converter's plan, and the
writer of synthetic stand-ins in that same layout (so `prepare` reads synthetic
and real data through one code path)."""
