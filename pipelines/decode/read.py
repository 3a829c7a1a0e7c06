"""Reading one audio file in-process: the decode errors, the checks, and the libsndfile decoder.

Both :mod:`pipelines.decode.audio` (the decoders a pipeline calls) and :mod:`pipelines.decode.helper`
(the helper process that runs libsndfile under a timeout) need these; kept below both, the
dependency runs one way (audio -> decode_worker -> audio_read), and the helper process loads
only this module, model.dsp, numpy, soundfile and soxr.
"""

from __future__ import annotations

import io
import os

import numpy as np

from model import dsp

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: ten minutes of 96 kHz 24-bit 8-channel WAV is 1.24 GB
# Largest |sample| accepted after format scaling (full scale is 1). Real audio, even clipped
# float masters, stays within a few units; past this the log-mel overflows to NaN.
MAX_PEAK = 1e3
# Decoded samples (seconds x native rate x channels) one track may take: ten minutes of 96 kHz
# 8-channel audio. Memory is bounded by streaming either way; this bounds the decoding time of a
# small file that expands to billions of samples (a FLAC of silence at 192 kHz, 8 channels).
MAX_DECODED_SAMPLES = 600 * 96_000 * 8
# Frames read, mixed down and resampled at a time: a whole number of MPEG audio frames (1152
# samples; 576 and 384 divide it), since libsndfile's MP3 decoder garbles the samples after a
# read that ends inside a frame (up to 0.4 off on a 22 kHz mono MP3, measured with 65,536).
DECODE_BLOCK_FRAMES = 1152 * 64


class DecodeError(Exception):
    """A track that cannot be decoded; the message is the reason written to the dead letter."""


class DecodeLimit(DecodeError):
    """A track past a decoding bound (sample count, sample values): final, since another
    decoder would reach the same bound, so ``auto`` does not fall back to ffmpeg."""


class TransientError(Exception):
    """A failure worth retrying (a dropped connection to an object store); see stages._DecodeFn."""


def local_path(uri: str) -> str | None:
    """The filesystem path of a local URI (plain path or file://), or None for remote URIs."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if "://" in uri:
        return None
    return uri


def file_size(uri: str) -> int:
    """Size in bytes of a local file or a remote object (Beam's FileSystems: gs:// and others)."""
    path = local_path(uri)
    if path is not None:
        return os.path.getsize(path)
    from apache_beam.io.filesystems import FileSystems

    from pipelines.storage import reach

    if uri.startswith("gs://") and reach.problem():  # asked once per process: no minutes of retries per uri
        raise DecodeError(f"gs:// cannot be reached: {reach.problem()}")
    try:
        found = FileSystems.match([uri])[0].metadata_list
    except (ConnectionError, TimeoutError) as error:
        raise TransientError(f"cannot read {uri}: {one_line(error)}") from error
    except Exception as error:  # Beam wraps backend errors in many types; the reason is what matters
        raise DecodeError(f"cannot read {uri}: {one_line(error)}") from error
    if not found:
        raise DecodeError(f"file not found: {uri}")
    return found[0].size_in_bytes


def check_size(uri: str, max_bytes: int) -> None:
    size = file_size(uri)
    if size > max_bytes:
        raise DecodeError(f"file is {size} bytes, over --max-bytes {max_bytes}")


class CappedReader(io.RawIOBase):
    """A read-only stream over ``handle`` that raises :class:`DecodeError` past ``max_bytes``:
    remote audio is streamed in pieces, never held whole, and never read beyond the cap."""

    def __init__(self, handle, uri: str, max_bytes: int):
        super().__init__()
        self._handle, self._uri, self._max_bytes = handle, uri, max_bytes

    def readable(self):
        return True

    def seekable(self):
        return self._handle.seekable()

    def seek(self, offset, whence=io.SEEK_SET):
        return self._handle.seek(offset, whence)

    def tell(self):
        return self._handle.tell()

    def readinto(self, buffer):
        try:
            data = self._handle.read(len(buffer))
        except (ConnectionError, TimeoutError) as error:
            raise TransientError(f"cannot read {self._uri}: {one_line(error)}") from error
        if self._handle.tell() > self._max_bytes:
            raise DecodeError(f"read past --max-bytes {self._max_bytes}: {self._uri}")
        buffer[: len(data)] = data
        return len(data)

    def close(self):
        self._handle.close()
        super().close()


def open_remote(uri: str, max_bytes: int) -> CappedReader:
    """Open a remote object for streaming, checked against ``max_bytes`` first."""
    from apache_beam.io.filesystems import FileSystems

    check_size(uri, max_bytes)
    try:
        return CappedReader(FileSystems.open(uri, compression_type="uncompressed"), uri, max_bytes)
    except (ConnectionError, TimeoutError) as error:
        raise TransientError(f"cannot read {uri}: {one_line(error)}") from error
    except Exception as error:
        raise DecodeError(f"cannot read {uri}: {one_line(error)}") from error


def check_samples(samples: np.ndarray) -> None:
    """Raise :class:`DecodeLimit` unless every sample is finite and within :data:`MAX_PEAK`.

    A float file can hold any float32, and values like 1e20 pass every other check only to
    turn the log-mel into NaN, so they are refused at decoding, where the reason is plain.
    """
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if not np.isfinite(peak):
        raise DecodeLimit("decoded audio contains NaN or infinity")
    if peak > MAX_PEAK:
        raise DecodeLimit(f"sample values out of range: peak |x| {peak:.3g} is over {MAX_PEAK:g} (full scale is 1)")


def _mix_down(block: np.ndarray) -> np.ndarray:
    # The channel mean as column adds: bit-identical to block.mean(axis=1), ~8x cheaper than
    # numpy's reduction over the short, innermost channel axis.
    mono = block[:, 0].copy()
    for channel in range(1, block.shape[1]):
        mono += block[:, channel]
    if block.shape[1] > 1:
        mono /= block.shape[1]
    return mono


def decode_with_soundfile(uri: str, *, max_duration_s: float, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Decode in-process with libsndfile, mix to mono, resample with soxr 'HQ' to 16 kHz.

    This is ``librosa.load(sr=16000)``'s own path, so features match librosa's closely. The
    file is read, mixed down and resampled in blocks of :data:`DECODE_BLOCK_FRAMES` (soxr's
    streaming resampler gives the same samples, to the bit, as resampling the whole signal),
    so memory follows the 16 kHz output, not the file's rate and channel count. Raises
    :class:`DecodeError` for anything libsndfile cannot read, and :class:`DecodeLimit` past
    :data:`MAX_DECODED_SAMPLES` or for samples that fail :func:`check_samples`.
    """
    import soundfile
    import soxr

    path = local_path(uri)
    if path is not None:
        check_readable(path)
    # Bytes paths keep non-UTF-8 file names (surrogate-escaped in the catalog) intact.
    source = os.fsencode(path) if path is not None else open_remote(uri, max_bytes)
    pieces, decoded = [], 0
    try:
        with soundfile.SoundFile(source) as audio_file:
            native_rate, channels = audio_file.samplerate, audio_file.channels
            remaining = int(max_duration_s * native_rate)
            if min(remaining, audio_file.frames) * channels > MAX_DECODED_SAMPLES:
                raise _too_many_samples(min(remaining, audio_file.frames), native_rate, channels)
            resampler = None
            if native_rate != dsp.SAMPLE_RATE:
                resampler = soxr.ResampleStream(native_rate, dsp.SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            while remaining > 0:
                block = audio_file.read(min(DECODE_BLOCK_FRAMES, remaining), dtype="float32", always_2d=True)
                if not len(block):
                    break
                remaining, decoded = remaining - len(block), decoded + len(block)
                if decoded * channels > MAX_DECODED_SAMPLES:  # the header understated the length
                    raise _too_many_samples(decoded, native_rate, channels)
                check_samples(block)
                mono = _mix_down(block)
                pieces.append(mono if resampler is None else resampler.resample_chunk(mono))
            if resampler is not None and decoded:
                pieces.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise DecodeError(f"soundfile failed: {one_line(error)}") from error
    finally:
        if path is None:
            source.close()
    if not decoded:
        raise DecodeError("no audio samples decoded")
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)


def _too_many_samples(frames: int, rate: int, channels: int) -> DecodeLimit:
    return DecodeLimit(
        f"too many samples to decode: {frames / rate:.1f} s x {rate} Hz x {channels} channels is over "
        f"the limit of {MAX_DECODED_SAMPLES} (lower --max-duration to decode less of each track)"
    )


def check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError(f"file not found: {path}")
    if os.path.isdir(path):
        raise DecodeError(f"is a directory, not an audio file: {path}")
    if not os.path.isfile(path):  # a FIFO or device would block the decoder forever
        raise DecodeError(f"not a regular file: {path}")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"empty file (0 bytes): {path}")
    if not os.access(path, os.R_OK):
        raise DecodeError(f"permission denied: {path}")


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
