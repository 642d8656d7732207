"""Email: SMTP sending (``smtp``) and the sent-mail ledger that sends each mail once
(``ledger``). Used by weekly reports and activity notifications."""
