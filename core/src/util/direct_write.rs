//! Writing a restored file past the page cache.
//!
//! A durable restore writes every byte twice through the page cache's path: once copied into
//! it, once written back by the final fsync. Profiles of a restore put that copy at a third of
//! its CPU, on a machine with two cores and a disk faster than what those cores leave over.
//! With `O_DIRECT` the disk reads the bytes straight from our buffer instead, and the fsync
//! that follows has only the file's metadata and the device's cache to flush (it is still
//! needed: `O_DIRECT` says nothing about either).
//!
//! `O_DIRECT` wants the buffer, the length and the file offset aligned to the device's
//! logical block; 4096 bytes covers every block size Linux uses. From a file's first full
//! 1 MiB chunk on, chunks are written directly; the file's last partial block is written after
//! `O_DIRECT` is turned off again, so the file ends exactly where its content does, and a file
//! smaller than a chunk is written through the page cache. Where the file system refuses
//! `O_DIRECT` (tmpfs, some network file systems), the writer is an ordinary buffered one.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

const ALIGNMENT: usize = 4096;
const CHUNK: usize = 1 << 20;

/// Writes a file from its start, sequentially, with positional writes (the descriptor's own
/// offset is left alone); [`DirectWriter::finish`] writes what is left. Dropped without
/// `finish`, the buffered tail is lost (the caller removes such a file).
///
/// A direct write holds the caller until the disk has the chunk. So that decoding the next
/// chunk does not wait for it, the first full chunk starts a thread that writes chunks while
/// the caller fills the next one: two buffers, one being filled, one being written.
pub struct DirectWriter<'f> {
    file: &'f File,
    /// Asked for O_DIRECT: turned on at the first full chunk.
    wants_direct: bool,
    /// O_DIRECT is on.
    direct: bool,
    current: AlignedBuffer,
    /// Where `current`'s first byte goes in the file.
    offset: u64,
    /// The buffer not in the writer thread's hands, once there are two.
    spare: Option<AlignedBuffer>,
    flusher: Option<Flusher>,
}

/// A chunk whose first byte is aligned for `O_DIRECT`.
struct AlignedBuffer {
    /// Larger than a chunk by the alignment, so that an aligned chunk fits in it.
    bytes: Vec<u8>,
    start: usize,
    filled: usize,
}

impl AlignedBuffer {
    fn new() -> AlignedBuffer {
        let bytes = vec![0u8; CHUNK + ALIGNMENT];
        let start = bytes.as_ptr().align_offset(ALIGNMENT);
        AlignedBuffer {
            bytes,
            start,
            filled: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.filled]
    }
}

/// The thread writing full chunks, and the channels that pass buffers to it and back.
struct Flusher {
    full: SyncSender<(AlignedBuffer, u64)>,
    empty: Receiver<AlignedBuffer>,
    thread: JoinHandle<io::Result<()>>,
}

impl Flusher {
    fn start(file: &File) -> io::Result<Flusher> {
        // A duplicate of the descriptor: the same open file, O_DIRECT included.
        let file = file.try_clone()?;
        // Rendezvous: a chunk is handed over only when the thread has finished the last one.
        let (full, full_chunks) = mpsc::sync_channel::<(AlignedBuffer, u64)>(0);
        let (give_back, empty) = mpsc::channel();
        let thread =
            crate::util::threads::spawn_without_signals("restore-write".into(), move || {
                for (mut buffer, offset) in full_chunks {
                    write_at(&file, buffer.data(), offset)?;
                    buffer.filled = 0;
                    // The writer may have finished or failed already; nothing waits then.
                    let _ = give_back.send(buffer);
                }
                Ok(())
            })?;
        Ok(Flusher {
            full,
            empty,
            thread,
        })
    }

    /// Stops the thread and returns the error it stopped on, if any.
    fn stop(self) -> io::Result<()> {
        drop(self.full);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the restore's writer thread panicked")))
    }
}

impl<'f> DirectWriter<'f> {
    /// `direct` asks for `O_DIRECT` from the first full chunk on: a file smaller than a chunk
    /// goes through the page cache, where its writeback joins the others' in the final fsync
    /// instead of holding the caller for one small write. Without `direct`, or where the file
    /// system refuses it, writes are buffered.
    pub fn new(file: &'f File, direct: bool) -> DirectWriter<'f> {
        DirectWriter {
            file,
            wants_direct: direct,
            direct: false,
            current: AlignedBuffer::new(),
            offset: 0,
            spare: None,
            flusher: None,
        }
    }

    /// Writes everything buffered, the last partial block without `O_DIRECT`, and leaves the
    /// descriptor's flags as they were when it was opened.
    pub fn finish(mut self) -> io::Result<()> {
        self.wait_for_flusher()?;
        if let Some(flusher) = self.flusher.take() {
            flusher.stop()?;
        }
        self.write_whole_blocks()?;
        if self.direct {
            set_direct(self.file, false)?;
            self.direct = false;
        }
        self.file.write_all_at(self.current.data(), self.offset)
    }

    /// Hands the full current chunk to the writer thread (started on the first one) and
    /// continues with the other buffer. Without O_DIRECT the page cache is the buffer.
    fn chunk_full(&mut self) -> io::Result<()> {
        if self.wants_direct && self.offset == 0 {
            self.direct = set_direct(self.file, true).is_ok();
        }
        if !self.direct {
            return self.write_whole_blocks();
        }
        if self.flusher.is_none() {
            self.flusher = Some(Flusher::start(self.file)?);
            self.spare = Some(AlignedBuffer::new());
        }
        self.wait_for_flusher()?;
        let next = self.spare.take().expect("the flusher gave its buffer back");
        let full = std::mem::replace(&mut self.current, next);
        let offset = self.offset;
        self.offset += CHUNK as u64;
        let flusher = self.flusher.as_ref().expect("started above");
        if flusher.full.send((full, offset)).is_err() {
            return Err(self.flusher_error());
        }
        Ok(())
    }

    /// Waits until the writer thread is done with the chunk it holds, if any.
    fn wait_for_flusher(&mut self) -> io::Result<()> {
        if self.spare.is_some() {
            return Ok(());
        }
        let Some(flusher) = &self.flusher else {
            return Ok(());
        };
        match flusher.empty.recv() {
            Ok(buffer) => {
                self.spare = Some(buffer);
                Ok(())
            }
            Err(_) => Err(self.flusher_error()),
        }
    }

    /// The error the writer thread stopped on.
    fn flusher_error(&mut self) -> io::Error {
        match self.flusher.take().map(Flusher::stop) {
            Some(Err(e)) => e,
            _ => io::Error::other("the restore's writer thread stopped"),
        }
    }

    /// Writes the whole blocks of the current buffer now and keeps the partial last one.
    fn write_whole_blocks(&mut self) -> io::Result<()> {
        let length = self.current.filled / ALIGNMENT * ALIGNMENT;
        if length == 0 {
            return Ok(());
        }
        let start = self.current.start;
        write_at(
            self.file,
            &self.current.bytes[start..start + length],
            self.offset,
        )?;
        self.current
            .bytes
            .copy_within(start + length..start + self.current.filled, start);
        self.current.filled -= length;
        self.offset += length as u64;
        Ok(())
    }
}

impl Write for DirectWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let buffer = &mut self.current;
        let taken = data.len().min(CHUNK - buffer.filled);
        let at = buffer.start + buffer.filled;
        buffer.bytes[at..at + taken].copy_from_slice(&data[..taken]);
        buffer.filled += taken;
        if buffer.filled == CHUNK {
            self.chunk_full()?;
        }
        Ok(taken)
    }

    /// Writes every whole block buffered; a partial last block waits for [`DirectWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        self.wait_for_flusher()?;
        self.write_whole_blocks()
    }
}

impl Drop for DirectWriter<'_> {
    fn drop(&mut self) {
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.stop();
        }
        if self.direct {
            // Others may still write through the descriptor; give it back as it was opened.
            let _ = set_direct(self.file, false);
        }
    }
}

/// Writes `data` at `offset`; should the file system take `O_DIRECT` at open but refuse the
/// write (a block size larger than our alignment), writes it through the page cache instead.
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    match file.write_all_at(data, offset) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && set_direct(file, false).is_ok() => {
            file.write_all_at(data, offset)
        }
        other => other,
    }
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // Safety: fcntl on a descriptor we borrow, reading and setting its status flags only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let wanted = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        if libc::fcntl(fd, libc::F_SETFL, wanted) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    fn write_and_read_back(directory: &std::path::Path, content: &[u8], pieces: usize) -> Vec<u8> {
        let path = directory.join("file");
        let file = File::create(&path).unwrap();
        let mut writer = DirectWriter::new(&file, true);
        for piece in content.chunks(pieces.max(1)) {
            writer.write_all(piece).unwrap();
        }
        writer.flush().unwrap();
        writer.finish().unwrap();
        drop(file);
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        back
    }

    #[test]
    fn every_length_reads_back_exactly_direct_or_not() {
        // In the source tree rather than /tmp: /tmp may be tmpfs, which refuses O_DIRECT,
        // and the direct path is the one to test (the assertion below says which one ran).
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let directory = tempfile::tempdir_in(root).unwrap();
        let probe = File::create(directory.path().join("probe")).unwrap();
        assert!(
            set_direct(&probe, true).is_ok(),
            "{} refuses O_DIRECT: this test would not test it",
            root.display()
        );
        let pattern: Vec<u8> = (0..3 * CHUNK + 5000).map(|i| (i * 7 % 251) as u8).collect();
        for length in [
            0,
            1,
            4095,
            4096,
            4097,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 5000,
        ] {
            for pieces in [1000, 256 * 1024, 3 * CHUNK] {
                let content = &pattern[..length];
                assert!(
                    write_and_read_back(directory.path(), content, pieces) == content,
                    "length {length} written in pieces of {pieces}"
                );
            }
        }
    }

    #[test]
    fn the_descriptor_is_given_back_buffered() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let directory = tempfile::tempdir_in(root).unwrap();
        let mut file = File::create(directory.path().join("file")).unwrap();
        let direct_flag = |file: &File| {
            // Safety: reads the status flags of a descriptor we own.
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) & libc::O_DIRECT }
        };
        let mut writer = DirectWriter::new(&file, true);
        writer.write_all(&vec![1u8; 2 * CHUNK + 10_000]).unwrap();
        assert_ne!(direct_flag(&file), 0, "whole chunks were written directly");
        writer.finish().unwrap();
        assert_eq!(direct_flag(&file), 0);
        // An unaligned write through the same descriptor works: O_DIRECT is off again.
        file.seek(io::SeekFrom::End(0)).unwrap();
        file.write_all(&[2u8; 3]).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 2 * CHUNK as u64 + 10_003);
    }

    #[test]
    fn a_failed_write_in_the_writer_thread_is_returned() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let directory = tempfile::tempdir_in(root).unwrap();
        let path = directory.path().join("file");
        File::create(&path).unwrap();
        // Read-only: every write fails, the threaded ones included (chunks 1 and 2 go to the
        // writer thread, whose failure the next handover or finish reports).
        let file = File::open(&path).unwrap();
        let mut writer = DirectWriter::new(&file, true);
        let result = writer
            .write_all(&vec![3u8; 3 * CHUNK])
            .and_then(|()| writer.finish());
        let error = result.unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{error}");
    }
}
