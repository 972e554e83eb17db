"""The mesh instance: registry view, cache manager, load queue, router and background duties."""
