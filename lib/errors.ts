// Errors shared by every part: the agent, the operator and the CLI tell the user's mistakes (print the message as it
// is, exit 2) from their own faults (print the stack) by class.

/** A configuration error whose message is meant for the user as it is. */
export class InputError extends Error {
  override name = 'InputError';
}
