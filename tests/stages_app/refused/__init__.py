"""The ``refused`` migrations of tests.stages_app: 0003 is a contract migration left unmarked."""
