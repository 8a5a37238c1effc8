"""The real-time stream: a partitioned bar bus on Redis Streams (`stream.bus`) carrying bar messages
(`stream.messages`). It imports the core library and the model layer only, never training, serving or flows.
"""
