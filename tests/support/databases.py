"""The database aliases a test that touches orders must be allowed (pytest.mark.django_db(databases=...))."""

# The database aliases: the shop's and the sandbox gateway's own connection (project.settings).
ALL_DATABASES = ["default", "gateway"]
