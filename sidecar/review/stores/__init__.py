"""The review store's implementations: ``migrations`` holds the numbered schema
changes, ``sql`` the statements and the logic both share; ``sqlite`` and ``postgres``
hold only how they open their database (``sidecar.storage``)."""
