"""Connections and transactions for the services' SQL stores (the review queue's and
the registry's): ``sql`` holds what every driver shares (a transaction's statements,
``:name`` parameters rendered for the driver), ``sqlite`` and ``postgres`` open
transactions on their database and translate their driver's failures into
StoreUnavailable, and ``url`` reads the URL that names a store's database. Nothing
here knows a table: the stores own their SQL."""
