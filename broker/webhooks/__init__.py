"""Webhooks for fleet operators (Standard Webhooks): subscriptions, outbox, delivery.

https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md

Events are queued in the transaction of the change they announce
(:mod:`~broker.webhooks.events`), delivered by workers that ask the gate for the
data at send time (:mod:`~broker.webhooks.worker`), signed
(:mod:`~broker.webhooks.signing`) and sent through the hardened client
(:mod:`~broker.webhooks.egress`).
"""
