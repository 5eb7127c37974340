"""Songs, data sources and the checks applied to them."""
