"""The molten-salt electrolysis cell (Nd / PrNd metal) as a unit kind: its recipe sections, assembly,
KPIs and kind object (:data:`apc.kinds.electrolysis_cell.kind.KIND`)."""
