"""Model output to safe HTML.

- engine: the markdown-it parsers, maths, and how links and images are written out;
- sanitize: the allow-list every piece of HTML passes through last;
- whole: a finished reply, at once or in frame-sized pieces;
- live: a streaming reply, as frozen blocks and a growing tail.
"""
