"""PostgreSQL access: connections, pools and migrations."""
