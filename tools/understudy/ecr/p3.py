def add_parser(sub):
    sub.add_parser("p3")
