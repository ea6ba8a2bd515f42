//! Extended attribute requests: the live tree's user xattrs, and the
//! control tree's `user.ckpt.*` metadata and pin switch.

// The handlers take exactly the arguments of fuser's `Filesystem` methods.
#![allow(clippy::too_many_arguments)]

use super::*;

impl CkptFs {
    pub(super) fn op_setxattr(
        &self,
        _req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if is_ctl(i) {
            return reply_empty(
                reply,
                self.on_ctl(i, |n| self.ctl.setxattr(n, name.as_bytes(), value)),
            );
        }
        self.done(
            reply,
            "setxattr",
            ino(i),
            self.tree.setxattr(ino(i), name.as_bytes(), value, flags),
        )
    }

    pub(super) fn op_getxattr(
        &self,
        _req: &Request,
        i: INodeNo,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        if is_ctl(i) {
            return match self.on_ctl(i, |n| self.ctl.getxattr(n, name.as_bytes())) {
                Ok(v) => reply_sized(reply, &v, size),
                Err(e) => reply.error(e),
            };
        }
        match self.tree.getxattr(ino(i), name.as_bytes()) {
            Ok(value) => reply_sized(reply, &value, size),
            Err(TreeError::NoAttr) => reply.error(Errno::ENODATA),
            Err(e) => reply.error(self.fail("getxattr", ino(i), &e)),
        }
    }

    pub(super) fn op_listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        if is_ctl(i) {
            return match self.on_ctl(i, |n| self.ctl.listxattr(n)) {
                Ok(names) => reply_sized(
                    reply,
                    &names
                        .iter()
                        .flat_map(|n| n.iter().copied().chain([0]))
                        .collect::<Vec<u8>>(),
                    size,
                ),
                Err(e) => reply.error(e),
            };
        }
        match self.tree.listxattr(ino(i)) {
            Ok(names) => {
                let mut list = Vec::new();
                for n in names {
                    list.extend_from_slice(&n);
                    list.push(0);
                }
                reply_sized(reply, &list, size);
            }
            Err(e) => reply.error(self.fail("listxattr", ino(i), &e)),
        }
    }

    pub(super) fn op_removexattr(
        &self,
        _req: &Request,
        i: INodeNo,
        name: &OsStr,
        reply: ReplyEmpty,
    ) {
        if is_ctl(i) {
            return reply_empty(
                reply,
                self.on_ctl(i, |n| self.ctl.removexattr(n, name.as_bytes())),
            );
        }
        self.done(
            reply,
            "removexattr",
            ino(i),
            self.tree.removexattr(ino(i), name.as_bytes()),
        )
    }
}
