"""The server layer: sockets, framing, one pygls protocol object per connection, params in, results out."""
