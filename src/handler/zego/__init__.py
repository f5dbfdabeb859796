"""ZEGO's ZIM server API: its rules (zim: signing, query encoding, what each code means), the client and its retry
policy (client), and HTTPS over one shared pool (transport)."""
