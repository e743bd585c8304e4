from benchcounter import hit


def noop():
    hit()
    return 1


def rt():
    return 1
