//! Deepgram streaming speech to text (`wss://api.deepgram.com/v1/listen`).
