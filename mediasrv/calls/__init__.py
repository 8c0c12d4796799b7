"""Calls: the call controller (answer policy, limits, causes), Call and its registry, rooms (the one
owner of who hears whom), and the typed command service every API dialect goes through."""
