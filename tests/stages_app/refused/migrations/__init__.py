"""The migrations of this set, as Django's MIGRATION_MODULES wants a package of them."""
