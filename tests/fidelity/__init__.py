"""The fidelity suite: the emulator held to what Mailchimp is seen doing.

Every test here plays a documented request through the official client
(``mailchimp_marketing``) against the emulator and checks the answer against
what a public source shows Mailchimp doing. The source of each behaviour is
named next to the test and listed in ``docs/emulator.md`` (fidelity table).
"""
