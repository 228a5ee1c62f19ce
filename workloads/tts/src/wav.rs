//! An incremental reader of RIFF/WAVE streams (what `espeak-ng --stdout`
//! writes): feed it bytes as they arrive, get the format once the header is
//! complete and PCM16 samples as the data chunk streams in.
//!
//! A writer that does not know the length up front (espeak-ng on a pipe, or
//! any streaming encoder) puts a placeholder in the RIFF and `data` sizes:
//! espeak-ng 1.51 writes `0x7FFFF000`, others `0xFFFFFFFF` or 0. A `data`
//! size of 0 or at least [`STREAMING_DATA_SIZE`] therefore means "until the
//! end of the stream"; any other size is honoured and bytes after it are
//! ignored. The RIFF size is never trusted.

use thiserror::Error;
use voice_agent_proto::audio::Pcm16LeDecoder;

/// `data` chunk sizes from this value up mean "until end of stream".
pub const STREAMING_DATA_SIZE: u32 = 0x7FFF_0000;

/// Most header bytes (chunks before `data`) buffered before giving up, so a
/// broken producer cannot make the reader grow without bound.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The format of a WAV stream this reader accepts: mono PCM16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// Samples per second.
    pub sample_rate: u32,
}

/// Why a byte stream is not a WAV stream this reader can play.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WavError {
    /// The stream does not start with `RIFF....WAVE`.
    #[error("not a RIFF/WAVE stream")]
    NotWave,
    /// The `fmt ` chunk is malformed or missing before `data`.
    #[error("bad fmt chunk: {0}")]
    BadFormat(String),
    /// Anything but mono 16-bit PCM.
    #[error("unsupported WAV format: {0}")]
    Unsupported(String),
    /// More than [`MAX_HEADER_BYTES`] before the audio.
    #[error("WAV header longer than {MAX_HEADER_BYTES} bytes")]
    HeaderTooLong,
    /// The stream ended inside the header, a declared data chunk or a sample.
    #[error("WAV stream truncated: {0}")]
    Truncated(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the 12-byte `RIFF<size>WAVE`.
    Riff,
    /// Waiting for an 8-byte chunk header.
    ChunkHeader,
    /// Waiting for the whole `fmt ` chunk body (padded size).
    Fmt(usize),
    /// Skipping an unknown chunk's bytes.
    Skip(u64),
    /// In the audio; `None` = until end of stream.
    Data(Option<u64>),
    /// The declared data chunk is complete; the rest is ignored.
    Done,
}

/// The incremental WAV reader; see the module docs.
#[derive(Debug)]
pub struct WavReader {
    stage: Stage,
    buf: Vec<u8>,
    header_bytes: usize,
    format: Option<WavFormat>,
    decoder: Pcm16LeDecoder,
}

impl Default for WavReader {
    fn default() -> Self {
        Self::new()
    }
}

impl WavReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        WavReader {
            stage: Stage::Riff,
            buf: Vec::new(),
            header_bytes: 0,
            format: None,
            decoder: Pcm16LeDecoder::new(),
        }
    }

    /// The format, once the header up to the `data` chunk has been read.
    pub fn format(&self) -> Option<WavFormat> {
        match self.stage {
            Stage::Data(_) | Stage::Done => self.format,
            _ => None,
        }
    }

    /// Consumes the next bytes of the stream, appending any complete samples
    /// to `out`. After an error the reader is unusable.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<i16>) -> Result<(), WavError> {
        while !bytes.is_empty() {
            match self.stage {
                Stage::Done => return Ok(()),
                Stage::Data(remaining) => {
                    let take = match remaining {
                        Some(r) => usize::try_from(r).unwrap_or(usize::MAX).min(bytes.len()),
                        None => bytes.len(),
                    };
                    self.decoder.push(&bytes[..take], out);
                    bytes = &bytes[take..];
                    if let Some(r) = remaining {
                        let left = r - take as u64;
                        self.stage = if left == 0 {
                            Stage::Done
                        } else {
                            Stage::Data(Some(left))
                        };
                    }
                }
                Stage::Skip(remaining) => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    self.count_header(take)?;
                    bytes = &bytes[take..];
                    let left = remaining - take as u64;
                    self.stage = if left == 0 {
                        Stage::ChunkHeader
                    } else {
                        Stage::Skip(left)
                    };
                }
                Stage::Riff | Stage::ChunkHeader | Stage::Fmt(_) => {
                    let need = match self.stage {
                        Stage::Riff => 12,
                        Stage::ChunkHeader => 8,
                        Stage::Fmt(n) => n,
                        _ => 0,
                    };
                    let take = (need - self.buf.len()).min(bytes.len());
                    self.count_header(take)?;
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.buf.len() == need {
                        let block = std::mem::take(&mut self.buf);
                        self.header_block(&block)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: an error if it stopped inside the header, inside a
    /// declared data chunk, or in the middle of a sample.
    pub fn finish(&mut self) -> Result<(), WavError> {
        match self.stage {
            Stage::Data(None) | Stage::Done => self
                .decoder
                .finish()
                .map_err(|_| WavError::Truncated("half a sample at the end")),
            Stage::Data(Some(_)) => Err(WavError::Truncated("data chunk shorter than declared")),
            _ => Err(WavError::Truncated("stream ended before the audio data")),
        }
    }

    fn count_header(&mut self, n: usize) -> Result<(), WavError> {
        self.header_bytes += n;
        if self.header_bytes > MAX_HEADER_BYTES {
            return Err(WavError::HeaderTooLong);
        }
        Ok(())
    }

    fn header_block(&mut self, block: &[u8]) -> Result<(), WavError> {
        let u32_at =
            |i: usize| u32::from_le_bytes([block[i], block[i + 1], block[i + 2], block[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([block[i], block[i + 1]]);
        match self.stage {
            Stage::Riff => {
                if &block[0..4] != b"RIFF" || &block[8..12] != b"WAVE" {
                    return Err(WavError::NotWave);
                }
                self.stage = Stage::ChunkHeader;
            }
            Stage::ChunkHeader => {
                let id = &block[0..4];
                let size = u32_at(4);
                self.stage = match id {
                    b"fmt " => {
                        if !(16..=1024).contains(&size) {
                            return Err(WavError::BadFormat(format!("size {size}")));
                        }
                        // Chunks are padded to an even length.
                        Stage::Fmt(size as usize + (size as usize & 1))
                    }
                    b"data" => {
                        if self.format.is_none() {
                            return Err(WavError::BadFormat("no fmt chunk before data".into()));
                        }
                        if size == 0 || size >= STREAMING_DATA_SIZE {
                            Stage::Data(None)
                        } else {
                            Stage::Data(Some(u64::from(size)))
                        }
                    }
                    _ => {
                        let padded = u64::from(size) + u64::from(size & 1);
                        if padded == 0 {
                            Stage::ChunkHeader
                        } else {
                            Stage::Skip(padded)
                        }
                    }
                };
            }
            Stage::Fmt(_) => {
                let tag = u16_at(0);
                let channels = u16_at(2);
                let rate = u32_at(4);
                let bits = u16_at(14);
                // 0xFFFE is WAVE_FORMAT_EXTENSIBLE; its sub-format must then
                // be PCM too, but a 16-bit mono stream is unambiguous.
                if tag != 1 && tag != 0xFFFE {
                    return Err(WavError::Unsupported(format!(
                        "format tag {tag:#06x} (want 1, PCM)"
                    )));
                }
                if channels != 1 || bits != 16 {
                    return Err(WavError::Unsupported(format!(
                        "{channels} channel(s) of {bits} bits (want mono 16-bit)"
                    )));
                }
                if !(1_000..=384_000).contains(&rate) {
                    return Err(WavError::Unsupported(format!("sample rate {rate} Hz")));
                }
                self.format = Some(WavFormat { sample_rate: rate });
                self.stage = Stage::ChunkHeader;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rate: u32, data_size: u32, extra_chunk: bool) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        h.extend_from_slice(b"WAVE");
        if extra_chunk {
            h.extend_from_slice(b"LIST");
            h.extend_from_slice(&5u32.to_le_bytes());
            h.extend_from_slice(b"abcde\0");
        }
        h.extend_from_slice(b"fmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * 2).to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data_size.to_le_bytes());
        h
    }

    fn samples(n: usize) -> Vec<i16> {
        (0..n).map(|i| (i as i16).wrapping_mul(37)).collect()
    }

    fn read_all(bytes: &[u8], chunk: usize) -> Result<(Option<WavFormat>, Vec<i16>), WavError> {
        let mut reader = WavReader::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            reader.push(piece, &mut out)?;
        }
        reader.finish()?;
        Ok((reader.format(), out))
    }

    #[test]
    fn streaming_sizes_read_to_the_end_in_any_split() {
        let audio = samples(1000);
        for data_size in [0xFFFF_FFFF, 0x7FFF_F000, 0] {
            let mut bytes = header(22_050, data_size, true);
            bytes.extend(voice_agent_proto::audio::samples_to_pcm16_le(&audio));
            for chunk in [1, 3, 44, 4096] {
                let (format, out) = read_all(&bytes, chunk).expect("valid");
                assert_eq!(
                    format,
                    Some(WavFormat {
                        sample_rate: 22_050
                    })
                );
                assert_eq!(out, audio, "size {data_size:#x}, chunk {chunk}");
            }
        }
    }

    #[test]
    fn a_declared_size_is_honoured() {
        let audio = samples(10);
        let mut bytes = header(16_000, 20, false);
        bytes.extend(voice_agent_proto::audio::samples_to_pcm16_le(&audio));
        bytes.extend_from_slice(b"LIST\x02\0\0\0zz");
        let (_, out) = read_all(&bytes, 7).expect("valid");
        assert_eq!(out, audio);

        let mut short = header(16_000, 40, false);
        short.extend(voice_agent_proto::audio::samples_to_pcm16_le(&audio));
        assert_eq!(
            read_all(&short, 7).expect_err("short"),
            WavError::Truncated("data chunk shorter than declared")
        );
    }

    #[test]
    fn format_is_known_once_data_starts() {
        let bytes = header(22_050, 0x7FFF_F000, false);
        let mut reader = WavReader::new();
        let mut out = Vec::new();
        reader.push(&bytes[..30], &mut out).expect("partial");
        assert_eq!(reader.format(), None);
        reader.push(&bytes[30..], &mut out).expect("rest");
        assert_eq!(reader.format().map(|f| f.sample_rate), Some(22_050));
        assert!(out.is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_play() {
        assert_eq!(
            read_all(b"RIFX\0\0\0\0WAVEfmt ", 4).expect_err("rifx"),
            WavError::NotWave
        );
        assert!(matches!(
            read_all(&header(22_050, 0, false)[..20], 4).expect_err("cut"),
            WavError::Truncated(_)
        ));
        let mut stereo = header(22_050, 0, false);
        stereo[22] = 2;
        assert!(matches!(
            read_all(&stereo, 64).expect_err("stereo"),
            WavError::Unsupported(_)
        ));
        let mut float = header(22_050, 0, false);
        float[20] = 3;
        assert!(matches!(
            read_all(&float, 64).expect_err("float"),
            WavError::Unsupported(_)
        ));
        let mut no_fmt = b"RIFF\0\0\0\0WAVE".to_vec();
        no_fmt.extend_from_slice(b"data\0\0\0\0\0\0");
        assert!(matches!(
            read_all(&no_fmt, 64).expect_err("no fmt"),
            WavError::BadFormat(_)
        ));
        let mut huge = b"RIFF\0\0\0\0WAVE".to_vec();
        huge.extend_from_slice(b"junk\xff\xff\xff\x7f");
        huge.extend(vec![0u8; MAX_HEADER_BYTES + 10]);
        assert_eq!(
            read_all(&huge, 4096).expect_err("huge"),
            WavError::HeaderTooLong
        );
        let mut odd = header(22_050, 0, false);
        odd.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            read_all(&odd, 64).expect_err("odd"),
            WavError::Truncated(_)
        ));
    }
}
