#!/bin/sh
# halb notify hook: called with MASTER, BACKUP or FAULT (also in $HALB_STATE).
logger -t halb-notify "VRRP vrid ${HALB_VRID:-?} on ${HALB_INTERFACE:-?}: $1"
