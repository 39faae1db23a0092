"""The ``marked`` migrations of tests.stages_app: 0003 is a contract migration marked as one."""
