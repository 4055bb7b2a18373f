# What a board (and the unix port) runs after boot.py: the terminal service.
from firmware import app

app.main()
