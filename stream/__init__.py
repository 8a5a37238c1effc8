"""The real-time stream: a partitioned bar bus on Redis Streams (`stream.bus`) carrying bar messages
(`stream.messages`), and the pipeline that consumes it.

- `config`: `StreamConfig` (Redis, partitions, batch sizes, timings; one bus per bar interval);
- `series`: one series' live state (incremental indicators, rolling risk), warmed up from stored bars;
- `online`: fresh rows into the Feast online store in the layout the service reads;
- `scoring`: the registry's champions scoring those rows through the model layer;
- `publish`: numbered JSON messages on the channels of `finstream.channels` (pub/sub plus a history);
- `pipeline`: the bus handler tying them together per batch;
- `worker`, `monitor`, `runner`: consumers, the metrics/status channels, processes and their supervision;
- `replay`: the producer that plays real history onto the bus.

It imports the core library and the model layer only, never training, serving or flows.
"""
