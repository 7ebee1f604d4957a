def main(argv=None):
    raise SystemExit("s2pt: CLI not written yet")
