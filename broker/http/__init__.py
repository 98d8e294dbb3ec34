"""The HTTP edge: the only package that imports aiohttp.

``app`` builds the application, ``middleware`` stamps request ids, writes the
access log and adds security headers, ``problems`` renders every error as RFC
9457 problem details (https://www.rfc-editor.org/rfc/rfc9457).
"""
